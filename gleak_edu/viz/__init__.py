"""Static figures: image grids, original-vs-reconstruction, curves, diagrams.

Every function returns a ``matplotlib.figure.Figure`` (and does not call
``plt.show()``), so the same code works in notebooks, scripts, tests and the
lecturer's figure bank (``make figures``). Images are float ``[B, C, H, W]``
or ``[C, H, W]`` tensors with pixels in [0, 1]. Colours come from
:mod:`gleak_edu.viz.palette` (one meaning per colour, colour-blind safe).

The package is split by topic; everything is importable from ``gleak_edu.viz``:
``_base`` (grids, curves, the threat model, PRECODE/PPP diagrams, the arena
heatmap), ``palette``, ``quality`` (what a PSNR or SSIM value looks like),
and one module of figures per notebook topic.
"""

from gleak_edu.viz import palette
from gleak_edu.viz._base import *  # noqa: F401,F403
from gleak_edu.viz._base import __all__ as _base_all
from gleak_edu.viz.palette import DEFENSE, ROLE, SCHEDULE, SEQUENTIAL, defense_color

__all__ = [*_base_all, "palette", "DEFENSE", "ROLE", "SCHEDULE", "SEQUENTIAL", "defense_color"]
