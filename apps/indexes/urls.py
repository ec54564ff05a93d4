from django.urls import path

from apps.indexes import views

app_name = "indexes"
urlpatterns = [
    path("search-service/", views.search_status, name="search_status"),
]
