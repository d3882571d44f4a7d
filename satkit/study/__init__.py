"""A SAT study: one directory holding every model's attack, every target's transfers, the matrix and its analyses."""

from satkit.study.run import DIGITS_EPS, StudyConfig, default_models, plan_study, run_study, slug

__all__ = ["DIGITS_EPS", "StudyConfig", "default_models", "plan_study", "run_study", "slug"]
