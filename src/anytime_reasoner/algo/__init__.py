"""Pure tensors (docs/ARCHITECTURE.md): budgets and priors, BRPO advantages, the length rewards of the
budget-aware methods, the PPO loss, rollout/trainer agreement and TIS. Imports torch and itself only;
callers pass numbers, never configuration objects."""
