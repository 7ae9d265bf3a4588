"""Methods on the outputs of ensemble members: voting rules and their robustness certificates
(:mod:`~commlab.ensembles.voting`), early-exit cascades (:mod:`~commlab.ensembles.cascade`),
averaging of members' predictions (:mod:`~commlab.ensembles.averaging`) and scores of probabilistic
ensemble forecasts (:mod:`~commlab.ensembles.scores`: CRPS of an ensemble, standard and fair, and of
a Gaussian in closed form, the energy score, spread–skill with the (m+1)/m correction, rank
histograms and their χ², the Brier score of an exceedance). Sub-modules are imported directly."""
