"""napari plugin (npe2 manifest ``napari.yaml``): readers, an OME-Zarr writer, widgets.

- Reader: TIFF, HDF5 (``file.h5:/dataset`` or its first 3D dataset),
  Zarr/OME-Zarr and MRC volumes as image layers with ``scale`` = voxel size
  and ``translate`` = position, in nm, so volumes overlay in world space.
- Writer: an image layer to OME-Zarr with its voxel size and position.
- Widgets: axial restoration and missing/damaged section restoration; they
  run ``vemrestore.api._memory`` in a worker thread and add the result as a
  layer that overlays the input.

Nothing here is imported by the rest of vemrestore; napari loads it on demand.
"""
