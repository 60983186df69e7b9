"""The `unet` segmentation backend: HPA-compatible DPN-U-Nets and the HPA post-processing.

- `network`: `DPNUnet`, the network of the HPA cell segmenter (the one `nn.Module` file);
- `config`: a network's checkpoint config (`unet_config`) and the network it describes (`build_unet`);
- `preprocess`: the field -> network input and softmax -> uint8 map steps of hpacellseg;
- `postprocess`: hpacellseg's `label_nuclei` and `label_cell`, built from `morphology` (thresholds,
  size filters, holes, closing), `watershed` (seeded watersheds, the block grid) and `flood`
  (the compiled flooding loop, `_flood.c`, and its fallback);
- `convert`: the official weight files -> plain-data checkpoints, without running their pickles;
- `backend`: `UnetBackend`, the two networks and the post-processing behind the backend protocol.

Segmentation checkpoints are saved and loaded by `ml.checkpoints`.
"""
