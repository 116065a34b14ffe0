"""Planning a training run: Kohya's aspect buckets, step arithmetic and the guide's advice."""

from kiln.engine.plan.buckets import BucketAssignment, BucketSpec, assign_bucket, bucket_resolutions
from kiln.engine.plan.steps import StepPlan, epochs_for_target, plan_steps, repeats_for_target

__all__ = [
    "BucketAssignment",
    "BucketSpec",
    "StepPlan",
    "assign_bucket",
    "bucket_resolutions",
    "epochs_for_target",
    "plan_steps",
    "repeats_for_target",
]
