"""``outcrop bench``: load a real server over HTTP and compare it with its baselines.

Modules: ``options`` (what to run), ``client`` (signed streaming load generator),
``serverproc`` (a real ``outcrop serve`` subprocess), ``baselines`` (in-process
llama.cpp loops, memory bandwidth), ``instant_engine`` (an engine with no model, for the
HTTP layer alone), ``report`` (statistics, targets, tables) and ``runner`` (the run).
"""
