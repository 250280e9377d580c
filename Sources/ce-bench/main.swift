print("ce-bench")
