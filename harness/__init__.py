"""emergence-harness: evaluate checkpoints and record their pre-training loss next to every metric."""

__version__ = "0.1.0"

__all__ = ["EvalCallback", "evaluate_model"]


def __getattr__(name: str):
    # imported on first use: `harness.evaluate_model` pulls in torch and transformers, which the
    # command line and the analysis modules should not pay for
    if name == "evaluate_model":
        from harness.runs.in_process import evaluate_model

        return evaluate_model
    if name == "EvalCallback":
        from harness.runs.callback import EvalCallback

        return EvalCallback
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
