"""Data: in-memory image datasets (Fashion-MNIST, image folders), normalisation, label-space checks, augmentation."""

from .datasets import ImageDataset, Normalization, check_class_names, data_fingerprint, dataset_normalization
from .fashion_mnist import FASHION_MNIST_CLASSES, download_fashion_mnist, load_fashion_mnist
from .folders import IMAGE_SUFFIXES, load_image_folder, read_image

__all__ = [
    "FASHION_MNIST_CLASSES",
    "IMAGE_SUFFIXES",
    "ImageDataset",
    "Normalization",
    "check_class_names",
    "data_fingerprint",
    "dataset_normalization",
    "download_fashion_mnist",
    "load_fashion_mnist",
    "load_image_folder",
    "read_image",
]
