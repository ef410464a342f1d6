"""Upsampling whole cohorts: many volume files with one model, optionally spread over processes.

Shared by the ``semantic-interpolation upsample-batch`` command and the Slicer batch script
(``mrml/batch.py``); each front-end only parses its arguments and supplies a *backend* (how one
file is read, upsampled and written). One job per module:

* :mod:`.discovery`  which inputs a list of files, folders (DICOM series folders) and list files names;
* :mod:`.naming`     where each input's output goes, and the checks that no two collide;
* :mod:`.sharding`   a deterministic split of the inputs over shards, balanced by file size;
* :mod:`.outputs`    whether an existing output is a complete file (resume), stale partial files;
* :mod:`.runner`     the pipelined loop: reading and writing in background threads, bounded queues;
* :mod:`.summary`    the summary CSV (input, output, status, seconds, message);
* :mod:`.backends`   backends for SimpleITK image files and for ``.npy`` arrays;
* :mod:`.distributed` the shard of this process under ``torchrun`` and the merged summary.

Nothing here imports SimpleITK at module level (the ``.npy`` path runs without it).
"""
