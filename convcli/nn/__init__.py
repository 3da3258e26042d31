"""A pretrained CNN on convcli's own engine: EfficientNet-Lite0 classifying photos.

- ``pickle_loader``: PyTorch checkpoints read without torch and without running their code.
- ``weights``: strict loading, batch norm folded in, the checksum-keyed cache.
- ``layers`` and ``efficientnet``: small layers and the network as a table of block rows, bound
  for each input shape into steps on preallocated buffers: the one forward path, the first pass included.
- ``preprocess``: from a photo file to the network's input, exactly.
- ``classify`` and ``cam``: one image to its top classes and its class-activation map.

Nothing here is imported by the CLI at start-up; numpy and Pillow load when a command needs them.
"""
