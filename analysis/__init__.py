"""Analysis: read the results store, relate final layer rotation to test accuracy, draw figures."""
