"""Dataset readers shared by `training/` and `evaluation/`: every dataset is one `Family`, found, listed and
decoded the same way.

- `archive`: a set's files (a folder, or a plain tar read in place), the `Sample` type (its photo, depth and
  mask names) and `NamingRule`, the one rule that finds samples among a set's file names.
- `family`: `Family` (naming rules, depth decoder to metres with a validity mask, default cap, list columns,
  benchmark place and count) and `Reader` (one set's photos and ground truth, mask and cap applied).
- `lists`: the one list reader, for training splits and benchmark filename lists alike (re-rooting foreign paths).
- `files`: the file decoders every family uses (images, 8/16-bit PNG, `.npy`, `.pfm`, `.exr`), from bytes.
- `registry`: every family by name, `DATASET:PATH` arguments, the benchmarks chosen by `--benchmark`.
- One module per family, declaring its `FAMILY` and its decoder: `generic` (the user's own data), the paper's
  training sets `hypersim`, `vkitti`, `irs`, `blendedmvs`, `tartanair`, and the five zero-shot benchmarks `nyu`,
  `kitti`, `eth3d`, `scannet`, `diode`.

A family's module names the format it follows (the publisher's documentation or tool) in its docstring and turns
that dataset's ground truth into depth in metres with a validity mask.
"""
