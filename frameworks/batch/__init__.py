"""The bundled batch framework: jobs of one or many tasks."""

from corral.frameworks.batch.scheduler import BatchScheduler, TaskProgress
from corral.frameworks.batch.spec import JobSpec, JobSpecError, TaskGroup, load_job, parse_job

__all__ = [
    "BatchScheduler",
    "JobSpec",
    "JobSpecError",
    "TaskGroup",
    "TaskProgress",
    "load_job",
    "parse_job",
]
