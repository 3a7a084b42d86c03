"""One module per collection: clients, goals, circles, tasks, imports."""
