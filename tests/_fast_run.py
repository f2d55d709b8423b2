"""Overrides shared by the tests that run ``train(cfg)`` end to end with a tiny model."""

#: one training step and one validation batch on the CPU, nothing logged, batches of 4 pairs
FAST_DEV_RUN = (
    "data.batch_size=4",
    "data.val_batches=2",
    "data.num_workers=0",
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.fast_dev_run=true",
    "trainer.enable_progress_bar=false",
)
