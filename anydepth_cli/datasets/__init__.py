"""Dataset readers shared by `training/` and `evaluation/`: one small module per dataset family.

- `files`: the file decoders every family uses (images, 8/16-bit PNG, `.npy`, `.pfm`, `.exr`), from bytes, so
  that a file on disk and a member of a tar archive are read the same way.
- `generic`: the user's own data: image/depth folders, PNG depth divided by one `depth_scale`.
- `hypersim`, `vkitti`, `irs`, `blendedmvs`, `tartanair`: the paper's training sets. Each has a `NAME`, a
  `decode(bytes, name)` to depth and validity, a `find(folder)` of its own layout and a default `MAX_DEPTH`.
- `lists` (published split files, re-rooted), `layout` (finding pairs by rule), `sources` (`DATASET:PATH`
  arguments and the ground-truth reader of each).
- `nyu`, `kitti`, `eth3d`, `scannet`, `diode`: the five zero-shot benchmarks as the standard evaluation tars
  hold them. Each has a `NAME`, its place under the data root (`LOCATION`), its `STANDARD_COUNT`, a `NAMING`
  rule, a `ground_truth(...)` decoder to depth and validity and `sample_from_line` for its filename list.
- `archive` (a set read from a folder or in place from its tar), `benchmarks` (the sets by name).

A dataset family's module names the format it follows (the publisher's documentation or tool) in its
docstring and turns that dataset's ground truth into depth in metres with a validity mask.
"""
