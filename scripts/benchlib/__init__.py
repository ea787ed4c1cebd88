"""The benchmark's parts (scripts/bench.py is the entry point): the process runner and statistics
(``runner``), the data directories (``fixtures``), one module per scenario (``lifecycle``: empty,
``bigdir``: first/big/after, ``storms``, ``gcbench``, ``pool``) and the report with the goals
(``report``)."""
