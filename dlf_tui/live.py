"""Watch and steer your own training loop from dlf-tui.

    import dlf_tui
    with dlf_tui.live.Run(loss_fn, optimizer=opt, name="my-exp", state={"model": model}) as run:
        for x, y in loader:
            loss = run.loss(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            if not run.step():
                break

``loss_fn`` is a ``dlf_tui.DynamicalLoss``.  The run is an ordinary run
directory: ``dlf-tui attach`` shows it live, ``dlf-tui ctl RUN set amplitude=5``
steers it.  See docs/library.md.
"""

from dlf_tui.engine.loops.live import Run

__all__ = ["Run"]
