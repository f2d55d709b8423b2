"""Small integration helpers (Hydra x Lightning)."""
