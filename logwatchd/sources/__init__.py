"""Sources: where lines come from (followed files, standard input; the journal lives beside).

Import each from its module (``sources.files.FileFollower``): the package itself imports
nothing, so a command that needs one constant of ``sources.journal`` does not load watchdog.
"""
