"""A SAT study: one directory holding every model's attack, every target's transfers, the matrix and its analyses.

- :mod:`.layout`: the directory and ``study.json`` (the one owner of both)
- :mod:`.config`: the picklable settings every job gets
- :mod:`.tasks`: the study's attack and transfer tasks (jobs) over :mod:`satkit.jobs`
- :mod:`.run`, :mod:`.plan`, :mod:`.analyses`: running, costing and analysing a study
- :mod:`.approx`: placing a new model among a study's models
- :mod:`.executors`: where jobs run (here, one process per device, Ray)
"""

from satkit.data.loaders import DIGITS_EPS
from satkit.study.config import StudyConfig, default_models
from satkit.study.layout import StudyDir, read_settings, slug
from satkit.study.plan import StudyPlan, plan_study
from satkit.study.run import StudyEvent, StudyResult, run_study

__all__ = [
    "DIGITS_EPS", "StudyConfig", "StudyDir", "StudyEvent", "StudyPlan", "StudyResult",
    "default_models", "plan_study", "read_settings", "run_study", "slug",
]
