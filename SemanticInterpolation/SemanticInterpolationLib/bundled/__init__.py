"""Where the bundled data files are found in every way of installing: the default model
(:mod:`..models.checkpoint` uses :mod:`.datafiles`) and the real sample volume (:mod:`.sampledata`).
Needs neither torch nor SimpleITK."""
