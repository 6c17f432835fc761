"""Layer rules: CRUD, and each experiment's range of a layer, allocated at its start."""

from __future__ import annotations

import secrets

from sqlmodel import Session, col, select

from service.errors import (
    ConflictError,
    NotFoundError,
    ValidationFailedError,
)
from service.experiments.models import (
    Experiment,
    Layer,
    LayerCreate,
    LayerExperimentOut,
    LayerPublic,
    LayerUpdate,
    Status,
)


def layer_public(session: Session, layer: Layer) -> LayerPublic:
    exps = session.exec(
        select(Experiment).where(Experiment.layer == layer.key).order_by(col(Experiment.key))
    ).all()
    return LayerPublic(
        key=layer.key,
        description=layer.description,
        holdout_fraction=layer.holdout_fraction,
        experiments=[
            LayerExperimentOut(key=e.key, status=Status(e.status), layer_range=e.layer_range)
            for e in exps
        ],
    )


def get_layer_row(session: Session, key: str) -> Layer:
    layer = session.exec(select(Layer).where(Layer.key == key)).first()
    if layer is None:
        raise NotFoundError(f"No layer with key '{key}'.")
    return layer


def create_layer(session: Session, body: LayerCreate) -> LayerPublic:
    if session.exec(select(Layer.id).where(Layer.key == body.key)).first() is not None:
        raise ConflictError(f"A layer with key '{body.key}' already exists.", code="duplicate_key")
    layer = Layer(**body.model_dump(), seed=secrets.token_hex(8))
    session.add(layer)
    session.commit()
    return layer_public(session, layer)


def list_layers(session: Session) -> list[LayerPublic]:
    return [
        layer_public(session, x) for x in session.exec(select(Layer).order_by(col(Layer.key))).all()
    ]


def update_layer(session: Session, key: str, body: LayerUpdate) -> LayerPublic:
    layer = get_layer_row(session, key)
    changes = body.model_dump(exclude_unset=True)
    if "holdout_fraction" in changes and changes["holdout_fraction"] != layer.holdout_fraction:
        if changes["holdout_fraction"] is None:
            raise ValidationFailedError.on("holdout_fraction", "give a number in [0, 1)")
        live = session.exec(
            select(Experiment.key).where(
                Experiment.layer == key,
                col(Experiment.status) != Status.draft.value,
                col(Experiment.status) != Status.archived.value,
            )
        ).all()
        if live:
            raise ConflictError(
                f"The holdout of layer '{key}' cannot change while experiments have used it "
                f"({', '.join(sorted(live))}): units would move between holdout and experiments.",
                code="layer_in_use",
            )
        layer.holdout_fraction = changes["holdout_fraction"]
    if "description" in changes:
        layer.description = changes["description"]
    session.add(layer)
    session.commit()
    return layer_public(session, layer)
