"""Settings shared by the stage tests: a small graph on tiny models."""

SMALL = [
    "llm.model=tiny",
    "methods=[nonperso,constant,dep]",
    "generate.max_new_tokens=4",
    "generate.max_samples=4",
    "train.epochs=1",
    "train.samples_per_user=1",
    "train.val_samples=2",
    "train.max_target_tokens=8",
    "train.batch_size=4",
    "train.grad_accum=1",
    "evaluate.bertscore=false",
    "evaluate.nll_target_tokens=8",
    "probe.splits=[test]",
    "probe.donors=2",
    "probe.max_samples=4",
]
