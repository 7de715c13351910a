"""gca_jax: Generalized Contrastive Alignment in JAX.

Contrastive losses as distribution alignment (Chen, Lin, Liu, Xiao, Dyer,
NeurIPS 2024): InfoNCE, RINCE and their GCA generalisations run Sinkhorn or
unbalanced-OT projections on the batch's similarity kernel.
"""

__version__ = "0.1.0"
