"""Methods on the outputs of ensemble members: voting rules and their robustness certificates
(:mod:`~commlab.ensembles.voting`), early-exit cascades (:mod:`~commlab.ensembles.cascade`),
averaging of members' predictions (:mod:`~commlab.ensembles.averaging`) and scores of probabilistic
ensemble forecasts (:mod:`~commlab.ensembles.scores`: CRPS of an ensemble, standard and fair, and of
a Gaussian in closed form, the energy score, spread–skill with the (m+1)/m correction, rank
histograms and their χ², the Brier score of an exceedance), a mixture of incremental river experts
with an online neural router for drifting streams (:mod:`~commlab.ensembles.driftmoe`), posterior
sampling with diffusion priors — Gaussian mixtures with exact scores along a VP SDE, the exact
posterior of a linear-Gaussian observation, DPS, a weighted-particle sampler, twisted SMC as a
reference and a small learned score
(:mod:`~commlab.ensembles.posterior_sampling`) — and distances between weighted samples (MMD, sliced
Wasserstein; :mod:`~commlab.ensembles.sample_distances`), and the domain posterior of a
Branch-Train-Merge ensemble of experts (:mod:`~commlab.ensembles.routing`), the diversity terms of
jointly trained ensembles — Jensen gap, entropy gap (:mod:`~commlab.ensembles.diversity`) — and
margin losses with EnsLoss's random calibrated loss derivatives
(:mod:`~commlab.ensembles.calibrated_losses`), decentralised flow-matching experts with a time-conditioned
router and the exact Gaussian-mixture identity (:mod:`~commlab.ensembles.decentralized_flow`; Fréchet
distances in :mod:`~commlab.ensembles.sample_distances`), a seed-conditioned ensemble emulator (SEEDS,
:mod:`~commlab.ensembles.emulation`) and a conditional-VAE ensemble forecaster trained with CRPS or L1
(FuXi-ENS, :mod:`~commlab.ensembles.vae_forecast`). Sub-modules are imported directly."""
