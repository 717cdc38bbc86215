"""Static figures: image grids, original-vs-reconstruction, curves, diagrams.

Every function returns a ``matplotlib.figure.Figure`` (and does not call
``plt.show()``), so the same code works in notebooks, scripts, tests and the
lecturer's figure bank (``make figures``). Images are float ``[B, C, H, W]``
or ``[C, H, W]`` tensors with pixels in [0, 1]. Colours come from
:mod:`gleak_edu.viz.palette` (one meaning per colour, colour-blind safe).

The package is split by topic; everything is importable from ``gleak_edu.viz``:
``_base`` (grids, curves, the threat model, PRECODE/PPP diagrams, the arena
heatmap), ``palette``, ``quality`` (what a PSNR or SSIM value looks like),
and one module of figures per notebook: ``dlg`` (01), ``grnn`` (02),
``precode`` (03), ``ppp`` (04), ``dp`` (05), ``text`` (06),
``arena_figures`` (07), ``federation`` (08).
"""

from gleak_edu.viz import palette
from gleak_edu.viz._base import *  # noqa: F401,F403
from gleak_edu.viz._base import __all__ as _base_all
from gleak_edu.viz.arena_figures import *  # noqa: F401,F403
from gleak_edu.viz.arena_figures import __all__ as _arena_all
from gleak_edu.viz.dlg import *  # noqa: F401,F403
from gleak_edu.viz.dlg import __all__ as _dlg_all
from gleak_edu.viz.dp import *  # noqa: F401,F403
from gleak_edu.viz.dp import __all__ as _dp_all
from gleak_edu.viz.federation import *  # noqa: F401,F403
from gleak_edu.viz.federation import __all__ as _federation_all
from gleak_edu.viz.grnn import *  # noqa: F401,F403
from gleak_edu.viz.grnn import __all__ as _grnn_all
from gleak_edu.viz.palette import DEFENSE, ROLE, SCHEDULE, SEQUENTIAL, defense_color
from gleak_edu.viz.ppp import *  # noqa: F401,F403
from gleak_edu.viz.ppp import __all__ as _ppp_all
from gleak_edu.viz.precode import *  # noqa: F401,F403
from gleak_edu.viz.precode import __all__ as _precode_all
from gleak_edu.viz.quality import *  # noqa: F401,F403
from gleak_edu.viz.quality import __all__ as _quality_all
from gleak_edu.viz.text import *  # noqa: F401,F403
from gleak_edu.viz.text import __all__ as _text_all

__all__ = [*_base_all, *_arena_all, *_dlg_all, *_dp_all, *_federation_all, *_grnn_all, *_ppp_all, *_precode_all, *_quality_all,
           *_text_all, "palette", "DEFENSE", "ROLE", "SCHEDULE", "SEQUENTIAL", "defense_color"]
