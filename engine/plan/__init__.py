"""Planning a training run: Kohya's aspect buckets, step arithmetic and the guide's advice."""

from engine.plan.buckets import BucketAssignment, BucketSpec, assign_bucket, bucket_resolutions
from engine.plan.steps import StepPlan, epochs_for_target, plan_steps, repeats_for_target

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
