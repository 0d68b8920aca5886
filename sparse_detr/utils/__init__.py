"""The lowest layer of the package: checks and loaders every other layer may import (it imports none of them).

- :mod:`.input_checks`: what the model and the predictors refuse to run on (images, input formats).
- :mod:`.keep_ratio`: the keep ratio rho's domain, (0, 1], for every door that takes a rho.
- :mod:`.safe_pickle`: the restricted unpickler for ``.pkl`` weights and the checkpoint-file checks.
- :mod:`.zip_integrity`: the CRC-32 of every member of a zip-format (``torch.save``) checkpoint.
- :mod:`.files`: tools' outputs written atomically, never over one of their inputs.
- :mod:`.processes`: whether the process named in a lock or a temporary file still runs.
"""
