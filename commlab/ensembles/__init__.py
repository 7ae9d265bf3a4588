"""Methods on the outputs of ensemble members: voting rules and their robustness certificates
(:mod:`~commlab.ensembles.voting`), early-exit cascades (:mod:`~commlab.ensembles.cascade`) and
averaging of members' predictions (:mod:`~commlab.ensembles.averaging`). Sub-modules are imported
directly."""
