"""Networks on the gridconv kernels: layers, losses, optimisers, training, models.

>>> from gridconv import nn
>>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.GlobalAvgPool(),
...                       nn.Flatten(), nn.Dense(8, 10))
"""

from . import init, losses, models, optim
from .init import seed
from .interpret import grad_cam
from .io import load, load_checkpoint, save
from .layers import (
    AbsRectify,
    AvgPool,
    BatchNorm,
    Conv,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    GlobalMaxPool,
    LeakyReLU,
    LogSoftmax,
    LpPool,
    MaxPool,
    PReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    TiledConv,
    UnsharedConv,
    Upsample,
)
from .losses import MSE, CrossEntropy, Dice, accuracy, dice_scores, mean_dice
from .module import (
    Identity,
    Module,
    Parallel,
    Parameter,
    Residual,
    Sequential,
    SkipConcat,
    deserialize,
    register,
    serialize,
)
from .optim import SGD, Adam, Optimizer
from .train import History, evaluate, fit, predict

__all__ = [
    "init", "losses", "models", "optim", "seed", "grad_cam", "load", "load_checkpoint", "save",
    "AbsRectify", "AvgPool", "BatchNorm", "Conv", "Conv1d", "Conv2d", "Conv3d",
    "ConvTranspose", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Dense",
    "Dropout", "Flatten", "GlobalAvgPool", "GlobalMaxPool", "LeakyReLU", "LogSoftmax",
    "LpPool", "MaxPool", "PReLU", "ReLU", "Sigmoid", "Softmax", "Tanh", "TiledConv",
    "UnsharedConv", "Upsample", "MSE", "CrossEntropy", "Dice", "accuracy", "dice_scores",
    "mean_dice", "Identity", "Module", "Parallel", "Parameter", "Residual", "Sequential",
    "SkipConcat", "deserialize", "register", "serialize", "SGD", "Adam", "Optimizer",
    "History", "evaluate", "fit", "predict",
]
