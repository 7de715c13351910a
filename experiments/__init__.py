"""The paper's experiments, run as ``python -m experiments.<name>``.

Commands: ``table2`` (Table 2: methods x datasets x augmentations),
``sensitivity`` (eps and iterations), ``pacs_domains`` (Figure 1(B), domain
target plans), ``plans`` (each loss's transport plan on real embeddings),
``theorems`` (the paper's theorems checked numerically), ``report`` (the
Markdown tables of finished runs) and ``accelerator_check`` (everything
measured on an accelerator in one budget). What they share: `entry` (flags
and the one ``main``), `methods` (Table 2's rows as data), `runs` (configs,
workdirs, run records), `trainer` (every call into gca_jax's training and
evaluation APIs), `tables` and `plotting`.
"""
