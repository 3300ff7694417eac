"""Builders, never imported at run time: the tiny models of every family (tests, bench and the
bundled backbone), the synthetic sample generator, the sample-set build and the pretraining of
medln-tiny. Loading a backbone or serving the app never imports this package (a test checks)."""
