"""The stages: where each step of the loop lives, between the CLI and the compute.

One module per stage. A stage reads the store, calls pure compute (``formats``, ``detector``,
``scoring``, ``corrupt``, ``gate``, ``manifest``, ``augment``, ``analysis``) and writes the store;
the CLI calls only stages. Nothing here is imported by the compute packages.

* :mod:`.imports`   import a folder into a dataset (all or nothing, with a report)
* :mod:`.datasets`  list, describe and delete datasets
* :mod:`.predict`   train, k-fold out-of-fold predictions, predict, import predictions, evaluate
* :mod:`.score`     score every image and box; fields and saved views for review
* :mod:`.review`    review queues in the App, progress, apply confirmed fixes, undo
* :mod:`.corrupt`   a copy with known label errors and its truth file
* :mod:`.export`    export the corrected data with a manifest; diff two exports
* :mod:`.gate`      the pre-training quality gate
"""
