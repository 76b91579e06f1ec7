"""BERT pretraining on WikiText-2 with PaddlePaddle: data, model, training."""
