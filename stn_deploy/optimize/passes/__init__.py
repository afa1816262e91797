"""The rewrite passes, one module each, registered on import (see :mod:`..base`).

:data:`ORDER` is the order ``optimize_model`` tries them in: cheap graph-level rewrites first,
then the convolution rewrites whose gain depends on the CPU (timed site by site in ``auto``).
"""

from __future__ import annotations

from stn_deploy.optimize.passes import (  # noqa: F401 - each registers its pass
    affine_gemm,
    bn_fold,
    chunk_conv,
    const_fold,
    phase_pool,
    relu_pool,
)

ORDER = (
    const_fold.NAME,
    bn_fold.NAME,
    relu_pool.NAME,
    affine_gemm.NAME,
    phase_pool.NAME,
    chunk_conv.NAME,
)
