"""The STN model family (needs torch): transforms, sampler settings, STN modules, the zoo, loading."""

from stn_deploy.pytorch.models.checkpoint import ModelConfig, save_checkpoint
from stn_deploy.pytorch.models.classifier import STNClassifier, from_tutorial_state_dict
from stn_deploy.pytorch.models.loading import (
    LoadedModel,
    load_checkpoint,
    load_factory,
    load_model,
    parse_shape,
    zoo_config,
)
from stn_deploy.pytorch.models.sampler import SamplerConfig
from stn_deploy.pytorch.models.stn import SpatialTransformer, STNParallel, STNSeries
from stn_deploy.pytorch.models.transforms import TRANSFORMS, make_transform
from stn_deploy.pytorch.models.zoo import ZOO, build_model, count_parameters

__all__ = [
    "TRANSFORMS",
    "ZOO",
    "LoadedModel",
    "ModelConfig",
    "SamplerConfig",
    "STNClassifier",
    "STNParallel",
    "STNSeries",
    "SpatialTransformer",
    "build_model",
    "count_parameters",
    "from_tutorial_state_dict",
    "load_checkpoint",
    "load_factory",
    "load_model",
    "make_transform",
    "parse_shape",
    "save_checkpoint",
    "zoo_config",
]
