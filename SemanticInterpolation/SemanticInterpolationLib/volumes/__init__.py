"""Image files and grids: SimpleITK reading/writing with clear errors (:mod:`.imageio`), atomic
file output (:mod:`.fileio`) and slice-axis / output-grid geometry (:mod:`.geometry`).

:mod:`.geometry` and :mod:`.fileio` need neither torch nor SimpleITK.
"""
