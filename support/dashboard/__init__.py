"""The risk dashboard: a web page a trader keeps open all day, with authenticated controls."""
