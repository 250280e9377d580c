print("ce-node")
