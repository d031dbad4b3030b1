"""The resuming logger callbacks under the module name they had before they were split into
``sweeps.resumed_tensorboard`` and ``sweeps.resumed_mlflow``: Tune's ``tuner.pkl`` of a sweep started then names
them here, and its resume finds them (nothing else imports this module)."""

from sweeps.resumed_mlflow import ResumingMLflowLoggerCallback
from sweeps.resumed_tensorboard import ResumingTBXLoggerCallback

__all__ = ["ResumingMLflowLoggerCallback", "ResumingTBXLoggerCallback"]
