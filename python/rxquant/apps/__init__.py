"""Applications: the ``rxquant`` command line and the demo. Nothing below imports them."""
