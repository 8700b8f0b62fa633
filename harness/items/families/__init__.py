"""One module per task family: each turns a TaskSpec plus data into rendered Items."""
