"""The intern's judgment: what it reads (``features``: Eq. 7 over Q ⊕ I_t) and the sufficiency
classifiers over it (``mlp``: the paper's MLP; ``estimators/``: logistic regression and gradient
boosting; ``grouped``: one per group), with their card and folder format (``card``) and loading by
kind (``loading``).

May import: common. Pure functions over arrays and classifier files: no backend, no model.
"""
