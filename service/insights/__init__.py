"""Portfolio insights, from outcome snapshots taken when experiments stop and conclude."""
