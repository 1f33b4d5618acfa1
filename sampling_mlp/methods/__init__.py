"""The built-in methods, one module (or package) each.

Every module here registers its method with :func:`sampling_mlp.registry.register`
when imported, and the registry imports them all on its first lookup: a new
built-in method is a new module here and nothing else.

* :mod:`.standard`: exact training (STANDARD), and the dense training step
  every masked-dense method shares;
* :mod:`.dropout`: Dropout and Adaptive Dropout (standout);
* :mod:`.mc`: MC-APPROX, Monte-Carlo approximate products;
* :mod:`.alsh`: ALSH-APPROX, active nodes found by asymmetric LSH.
"""
