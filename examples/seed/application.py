import mysql.connector
print("application.py: mysql-connector-python", mysql.connector.__version__)
