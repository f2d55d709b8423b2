"""Encoders, losses and the LightningModule."""
