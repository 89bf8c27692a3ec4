"""The Renderer the renderer service runs: capped render processes (services/renderer/pool.py)
that lay a report out in one piece (pdf.py) or, when it is long, in parts at once (split.py)."""

from __future__ import annotations

from services.renderer.job import Analysis, RenderJob, RenderOutput
from services.renderer.pdf import analyse_job
from services.renderer.pool import CappedPool
from services.renderer.split import render


class RenderPool(CappedPool):
    """CappedPool as a Renderer (services/renderer/core.py): `render` and `analyse`."""

    async def render(self, job: RenderJob) -> RenderOutput:
        return await render(self, job)

    async def analyse(self, job: RenderJob) -> Analysis:
        analysis: Analysis = await self.run(analyse_job, job, label=job.template)
        return analysis
