"""Array-level statistics: GLM, permutation inference, NBS, harmonization, effect sizes."""
