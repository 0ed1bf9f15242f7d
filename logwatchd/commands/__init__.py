"""One module per command of the command line; ``cli`` imports the one it runs and calls its
function of the command's name (``test`` is in ``replay``)."""
