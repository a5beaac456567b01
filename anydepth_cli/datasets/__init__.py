"""Dataset readers shared by `training/` and `evaluation/`: one small module per dataset family.

- `files`: the file decoders every family uses (images, 8/16-bit PNG, `.npy`, `.pfm`, `.exr`), from bytes, so
  that a file on disk and a member of a tar archive are read the same way.
- `generic`: the user's own data: image/depth folders and manifests, PNG depth divided by one `depth_scale`.

A dataset family's module names the format it follows (the publisher's documentation or tool) in its
docstring and turns that dataset's ground truth into depth in metres with a validity mask.
"""
