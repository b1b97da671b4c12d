"""Built-in models and the model registry."""

from . import conv4, mlp, resnet12  # noqa: F401  (registers the built-ins)
from ._registry import MODELS, create_model, list_models, register_model

__all__ = ["MODELS", "create_model", "list_models", "register_model"]
