"""Backbones (ResNet-18/34/50, AlexNet small/standard), heads, and a registry by name.

See `tagless.models.base.Backbone` for the interface every backbone implements.
"""
from tagless.models.alexnet import AlexNet, alexnet, alexnet_small
from tagless.models.base import Backbone, pooled_grid, pooled_layer_features
from tagless.models.heads import MLP, CamClassifier, MultiHead, mlp
from tagless.models.registry import (
    BACKBONES,
    ModelConfig,
    backbone_kwargs,
    build_backbone,
    build_backbone_from_config,
)
from tagless.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50

__all__ = [
    "BACKBONES",
    "MLP",
    "AlexNet",
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "CamClassifier",
    "ModelConfig",
    "MultiHead",
    "ResNet",
    "alexnet",
    "alexnet_small",
    "backbone_kwargs",
    "build_backbone",
    "build_backbone_from_config",
    "mlp",
    "pooled_grid",
    "pooled_layer_features",
    "resnet18",
    "resnet34",
    "resnet50",
]
