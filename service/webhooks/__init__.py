"""Webhook subscriptions and their deliveries, signed per the Standard Webhooks specification."""
